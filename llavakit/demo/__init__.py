"""The end-to-end demo on the embedded world (`llavakit demo`)."""
