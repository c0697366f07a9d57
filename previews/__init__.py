"""Preview containers of chat sessions on a Docker engine (issue: previews)."""
