"""`kubectl dspy`: read a DSPyDeployment's rollout and ask the operator to act on it.

The plugin never writes spec or status. It asks through one annotation
(`dspy.dev/request`) and reads the operator's answer from `status.lastRequest`, so the
operator stays the only writer of rollout state and can refuse what does not fit.

    __main__.py   argument parsing and the verbs (the only module with I/O besides client.py)
    client.py     the API edge: get, annotate and watch one DSPyDeployment; one-line errors
    verbs.py      pure: which verb fits which rollout state, and the annotation body
    render.py     pure: a DSPyDeployment (and `now`) -> the text of `status` and `history`
"""
