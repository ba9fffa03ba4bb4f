"""The command line's commands: run, convert, inspect and `plugins check`, their progress bar and reports.

main.py parses the arguments (with `cli.args`), builds the registry and the executor, and hands them
to a command here; the commands themselves build nothing.

    args.py           the argument parser of every command
    common.py         exit codes and the error printer
    run.py            `run`: a saved workflow, headless
    progress.py       the run's listener: a progress bar per node, or JSON lines
    documents.py      `convert` and `inspect`
    plugins_check.py  `plugins check`
"""
