# An independent reader of TensorBoard event files for test/logging.test.ts: TFRecord framing with
# its masked CRC-32C checked (CRC computed bit by bit here, not by table), and the Event and
# Summary protocol buffers decoded field by field. Prints one JSON list of events.
import json
import struct
import sys


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


def fields(buf):
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(buf, i)
        elif wire == 1:
            v = buf[i:i + 8]
            i += 8
        elif wire == 5:
            v = buf[i:i + 4]
            i += 4
        elif wire == 2:
            n, i = varint(buf, i)
            v = buf[i:i + n]
            i += n
        else:
            raise ValueError("wire type %d" % wire)
        yield num, wire, v


events = []
data = open(sys.argv[1], "rb").read()
at = 0
while at < len(data):
    (length,) = struct.unpack_from("<Q", data, at)
    (len_crc,) = struct.unpack_from("<I", data, at + 8)
    assert len_crc == masked(data[at:at + 8]), "length crc"
    rec = data[at + 12:at + 12 + length]
    (rec_crc,) = struct.unpack_from("<I", data, at + 12 + length)
    assert rec_crc == masked(rec), "data crc"
    at += 12 + length + 4
    ev = {}
    for num, wire, v in fields(rec):
        if num == 1:
            ev["wall_time"] = struct.unpack("<d", v)[0]
        elif num == 2:
            ev["step"] = v
        elif num == 3:
            ev["file_version"] = v.decode()
        elif num == 5:
            ev["values"] = {}
            for n2, _, val in fields(v):
                assert n2 == 1
                tag, simple = None, None
                for n3, _, x in fields(val):
                    if n3 == 1:
                        tag = x.decode()
                    elif n3 == 2:
                        simple = struct.unpack("<f", x)[0]
                ev["values"][tag] = simple
    events.append(ev)
print(json.dumps(events))
