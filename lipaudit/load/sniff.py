"""Which kind of file a model is, from its first bytes."""

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_MARK = 0x80


def sniff_format(data: bytes) -> str:
    """'onnx', 'zip' (TorchScript / torch.export archive), 'pickle', 'empty' or 'unknown'."""
    if not data:
        return "empty"
    if data.startswith(ZIP_MAGIC):
        return "zip"
    if data[0] == PICKLE_PROTOCOL_MARK and len(data) > 1 and data[1] <= 5:
        return "pickle"
    # An ONNX ModelProto starts with a protobuf tag: ir_version (field 1, varint) in practice,
    # or another field tag of ModelProto with a varint or length-delimited wire type.
    if data[0] in (0x08, 0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42):
        return "onnx"
    return "unknown"
