"""Captions and answers for video files: the library side of ``mammut-video caption`` and ``ask``."""
