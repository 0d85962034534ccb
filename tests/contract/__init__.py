"""The external contract: the command line, the policy and agent.toml, the journal and
the event schema, the agent API, the agent process's lifecycle (signals, sd_notify, exit
codes) and the systemd units."""
