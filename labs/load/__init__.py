"""Send requests and record what came back: the HTTP pool, SSE and one request and its error kinds,
the runner and `labs bench`, client retries. What a run sends (shapes, prompts) is
`labs.workload`, which the model and the records share.
"""
