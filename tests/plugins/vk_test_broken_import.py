"""A plugin whose import fails: it must be reported, not stop the others."""

raise RuntimeError("this plugin is broken on purpose")
