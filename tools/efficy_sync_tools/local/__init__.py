"""The embedded local stack: moto server, in-process Lambda dispatch, SQS poller, HTTP front."""
