"""The exit codes of the batch commands (the file command ``lib.batch.command`` and the Spark job
``lib.spark.job``), the same for both so that a script calling either can tell failures apart."""

#: Done; invalid rows, if any, are in the output's ``error`` column.
EXIT_OK = 0
#: An invalid cell with ``--strict``: nothing written.
EXIT_INVALID = 1
#: A wrong command line: an unknown option or format, a missing input, an existing output.
EXIT_USAGE = 2
#: The input cannot be read (malformed, not of its format) or the output cannot be written.
EXIT_UNREADABLE = 3
#: The model's artifacts failed verification, or there is no model to score with.
EXIT_MODEL = 4
#: Stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
EXIT_INTERRUPTED = 130

#: Invalid cells named in the message of a strict run that failed.
SHOWN_ERRORS = 5
