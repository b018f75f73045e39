"""Where artifacts and their metadata live: the local artifact store, the S3 store, ml-metadata and lineage over it."""
