"""Sources: read mail logs (files, rotated archives, journald, live follow) and bounce mail, and
turn them into the typed events of :mod:`mailwarden.events`. Nothing here classifies or stores."""
