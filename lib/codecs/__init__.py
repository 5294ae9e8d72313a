"""Wire formats, decoded in one place: one module per format, shared by the API's readers
(``service/readers/``), the file command (``lib.score``) and the Spark job (``lib.spark``), so
that a check added to a format reaches every entry point at once."""
