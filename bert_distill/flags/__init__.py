"""Each script family's flags, defined once; a script imports its family's."""
