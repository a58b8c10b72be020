"""Types of the compiled HTTP/2 DATA-frame reader (``h2_data.pyx``; twin ``h2_data_py``)."""

STREAM_WINDOW: int

def take_messages(data: bytes, offset: int, streams: dict) -> tuple[int, int]: ...
