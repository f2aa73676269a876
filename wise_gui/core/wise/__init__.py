"""The WISE engine: settings and presets, the memory layouts, training one edit, the editor."""
