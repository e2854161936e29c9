"""The core: profiles and settings, schemas, bucket layout, messages, events, errors, logging."""
