"""Streams on Spark (issue 18): a deployment whose Spark credentials name an allowed Spark master runs as a
Structured Streaming query, its driver a process of its own that the service supervises (supervisor.py), with an
exactly-once Kafka sink of ours (sink.py): Spark's own Kafka sink can write a record twice after a failure.

Only placement.py is imported by the service's request path; pyspark is imported by the driver process alone.
"""
