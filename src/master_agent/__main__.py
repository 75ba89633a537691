from master_agent.cli import app

app(prog_name="master-agent")
