"""Typed work items (an image, an image segmented automatically, a video) and the code that
makes one item and writes its outputs: what the command line, batch runs and the server share."""
