"""Click commands: one module per command, each thin (parse -> library -> render)."""
