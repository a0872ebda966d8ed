"""Foundation of the edge and the library: errors, settings, canonical JSON, credential masking, type checks,
progress. Imports nothing else of ``app``; everything may import it."""
