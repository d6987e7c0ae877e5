"""Cost measurements of the two conv types and of the data pipeline, written as JSON, CSV, markdown and plots."""
