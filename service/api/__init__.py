"""The HTTP surface: request guard and log lines (http.py), the OpenAI-compatible routes (openai_api.py), response types
(schemas.py), text/srt/vtt/verbose JSON (formats.py), the OpenAPI document (openapi.py) and metrics (metrics.py)."""
