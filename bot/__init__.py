"""Everything that talks to GitHub or to a person: CLI, webhook, Action, reports, feedback."""
