"""Using an adapted model: terminal chat, an OpenAI-compatible server with dynamic batching, a web page."""
