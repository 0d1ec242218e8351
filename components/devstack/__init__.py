"""The local platform for development and labs: an S3 server, the local stack, process helpers."""
