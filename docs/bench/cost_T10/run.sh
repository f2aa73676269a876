#!/bin/bash
# Cost per edit, first version (4b5d825, wise-retrieve preset) against main (wise-index preset), same 10
# dev records, interleaved old/new/new/old so that the machine's load hits both alike.
# Set up the old code first: git clone . /tmp/v1 && cd /tmp/v1 && git checkout 4b5d825 && make setup
D=/work/shared/data/zsre/zsre_edit_dev.json
old() { (cd /tmp/v1 && .venv/bin/wise-gui bench --data $D --limit 10 --json /tmp/cost/old_$1.json); }
new() { (cd /work/main && .venv/bin/wise-gui bench --data $D --limit 10 --json /tmp/cost/new_$1.json); }
date; old a; date; new a; date; new b; date; old b; date
