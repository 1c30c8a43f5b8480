"""`nanochat serve`: an OpenAI-compatible HTTP API and a browser chat page over a checkpoint.

protocol.py checks requests and shapes errors as OpenAI does, worker.py runs the BatchedEngine on
its own thread, app.py is the starlette application; the command is nanochat.commands.serve.
starlette and uvicorn are the optional extra `serve`: nothing imports them until the command runs."""
