"""A plugin that must never be imported by installed_fingerprint(): importing it fails loudly."""

raise RuntimeError("imported!")
