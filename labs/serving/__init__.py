"""Start, find and stop a vLLM server: profiles, engine command lines, processes, start-up, the
server record, the bundled CPU model, finding a server.
"""
