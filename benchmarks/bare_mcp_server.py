"""The baseline for the stdio start-up benchmark: a bare MCP SDK server with one tool, nothing else, on stdio."""

from mcp.server.mcpserver import MCPServer

server = MCPServer("bare")


@server.tool()
def echo(text: str) -> str:
    """Say `text` back."""
    return text


if __name__ == "__main__":
    server.run()
