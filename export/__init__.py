"""Export models to deployable folders (needs the ``export`` extra). Imports nothing heavy here."""
