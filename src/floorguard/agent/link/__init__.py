"""The link: ships the journal, carries heartbeats, commands and policies,
and enrolls the agent."""
