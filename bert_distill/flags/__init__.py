"""The scripts' side: each script family's flags, and `cli`, what scripts share."""
