"""Everything but the graph, in layers: a module imports from its own layer and the ones below.

    ray/        the map phase on Ray Data: engine (driver), plan (tasks), calls (actors)
    ─────────────────────────────────────────────────────────────────────────────────────
    summarize   the map and reduce steps         planning  documents planned beside the calls
    legend      the Sources under a summary      preview   a dry run's calls, tokens and cost
    report      the run's outcome                grouping  related documents, merged together
    ─────────────────────────────────────────────────────────────────────────────────────
    llm/        calls to the model: client (HTTP), pool (several endpoints), limits, budget,
                memory_guard, runner (retries, store, counters), factory (settings to client
                and runner, for the local run and the Ray actors alike), embedded (a local server)
    ─────────────────────────────────────────────────────────────────────────────────────
    prompting   prompts made from documents       result_store  answers and outcomes kept (SQLite)
    ─────────────────────────────────────────────────────────────────────────────────────
    answers/    answers checked against the documents: checks, citations, attribution, length
    text/       text in: loading (inputs, planning a document), decoding, codepages, language,
                counting (tokens), chunking
    ─────────────────────────────────────────────────────────────────────────────────────
    errors  secrets  logs  progress  config_file      (import nothing of the pipeline, or only errors)

The graph (graphs/) and the CLI (run.py) sit on top and import from here; nothing here
imports them. graphs/ imports ray/ only inside the functions a Ray run calls, so that a
run without Ray never loads it.
"""
