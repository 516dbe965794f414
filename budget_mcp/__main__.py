from budget_mcp.cli import main

main()
