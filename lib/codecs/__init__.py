"""Wire formats, decoded in one place: one module per format, shared by the API's readers
(``service/http/readers/``), the file command (``lib.batch.command``) and the Spark job (``lib.spark.job``), so
that a check added to a format reaches every entry point at once."""
