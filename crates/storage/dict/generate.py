#!/usr/bin/env python3
"""Trains the zstd dictionary Neurite compresses stored event JSON with.

The samples are synthetic: events of the common types, in the two shapes
Neurite stores (a room version 11 PDU in canonical JSON, and the client
format), with random IDs, random server names, user names and message text.
Nothing from a benchmark or a real server goes in, so the dictionary learns
the shape of Matrix events and the statistics of their base64 IDs and
signatures, not anybody's rooms.

    python3 -m venv /tmp/zv && /tmp/zv/bin/pip install zstandard==0.25.0
    /tmp/zv/bin/python crates/storage/dict/generate.py crates/storage/dict/events.dict

Changing the dictionary changes nothing already stored: each packed value
names its dictionary (the frame's dictionary ID), and the decoder keeps every
dictionary it ever shipped.
"""
import base64, hashlib, json, random, string, sys

import zstandard

DICT_ID = 1          # the ID written into every frame; bump it for a new dictionary
DICT_BYTES = 4096
rng = random.Random(20261124)

WORDS = ("the a to of and in is it you that he was for on are with as I his they be at one have this from "
         "or had by hot word but what some we can out other were all there when up use your how said an each "
         "she which do their time if will way about many then them write would like so these her long make "
         "thing see him two has look more day could go come did number sound no most people my over know "
         "water than call first who may down side been now find meeting lunch ok thanks deploy release bug").split()
SERVERS = [f"{rng.choice(['matrix', 'chat', 'im', 'hs', 'synapse', 'neurite'])}.{rng.choice(string.ascii_lowercase) * rng.randint(2, 3)}{rng.randint(0, 99)}.{rng.choice(['org', 'com', 'net', 'io', 'de', 'fr', 'uk'])}"
           for _ in range(40)] + ["localhost", "matrix.org", "example.com"]


def b64(n):
    return base64.urlsafe_b64encode(rng.randbytes(n)).decode().rstrip("=")


def std_b64(n):
    return base64.b64encode(rng.randbytes(n)).decode().rstrip("=")


def event_id():
    return "$" + b64(32)


def user(server):
    name = rng.choice([rng.choice(WORDS) + str(rng.randint(0, 999)), "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 12)))])
    return f"@{name}:{server}"


def text():
    return " ".join(rng.choices(WORDS, k=rng.randint(1, 25)))


def content_of(kind, sender, state_key):
    if kind == "m.room.message":
        c = {"body": text(), "msgtype": rng.choice(["m.text"] * 6 + ["m.notice", "m.emote", "m.image"])}
        if c["msgtype"] == "m.image":
            c.update(url=f"mxc://{rng.choice(SERVERS)}/{b64(18)}", info={"mimetype": "image/png", "size": rng.randint(1000, 900000), "w": 640, "h": 480})
        if rng.random() < 0.2:
            c["format"] = "org.matrix.custom.html"
            c["formatted_body"] = f"<p>{c['body']}</p>"
        if rng.random() < 0.2:
            c["m.relates_to"] = {"m.in_reply_to": {"event_id": event_id()}}
        if rng.random() < 0.3:
            c["m.mentions"] = {"user_ids": [user(rng.choice(SERVERS))]} if rng.random() < 0.5 else {}
        return c
    if kind == "m.room.member":
        c = {"membership": rng.choice(["join"] * 5 + ["leave", "invite", "ban", "knock"])}
        if c["membership"] == "join":
            c["displayname"] = state_key[1:].split(":")[0]
            if rng.random() < 0.4:
                c["avatar_url"] = f"mxc://{rng.choice(SERVERS)}/{b64(18)}"
        return c
    if kind == "m.room.create":
        return {"room_version": "11", "creator": sender} if rng.random() < 0.5 else {"room_version": "11"}
    if kind == "m.room.power_levels":
        return {"ban": 50, "events": {"m.room.avatar": 50, "m.room.canonical_alias": 50, "m.room.encryption": 100,
                                      "m.room.history_visibility": 100, "m.room.name": 50, "m.room.power_levels": 100,
                                      "m.room.server_acl": 100, "m.room.tombstone": 100},
                "events_default": 0, "invite": 0, "kick": 50, "redact": 50, "state_default": 50,
                "users": {sender: 100}, "users_default": 0}
    if kind == "m.room.join_rules":
        return {"join_rule": rng.choice(["invite", "public", "knock", "restricted"])}
    if kind == "m.room.history_visibility":
        return {"history_visibility": rng.choice(["shared", "invited", "joined", "world_readable"])}
    if kind == "m.room.guest_access":
        return {"guest_access": rng.choice(["can_join", "forbidden"])}
    if kind == "m.room.encryption":
        return {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 604800000, "rotation_period_msgs": 100}
    if kind == "m.room.name":
        return {"name": text()[:40]}
    if kind == "m.room.topic":
        return {"topic": text()}
    if kind == "m.reaction":
        return {"m.relates_to": {"event_id": event_id(), "key": rng.choice(["👍", "❤️", "😂", "🎉", "+1"]), "rel_type": "m.annotation"}}
    if kind == "m.room.redaction":
        return {"redacts": event_id(), "reason": text()[:30]} if rng.random() < 0.5 else {"redacts": event_id()}
    if kind == "m.room.encrypted":
        return {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": std_b64(rng.randint(100, 400)), "device_id": b64(7).upper()[:10],
                "sender_key": std_b64(32), "session_id": std_b64(32)}
    raise ValueError(kind)


KINDS = (["m.room.message"] * 30 + ["m.room.member"] * 10 + ["m.room.encrypted"] * 6 + ["m.reaction"] * 3 +
         ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility",
          "m.room.guest_access", "m.room.encryption", "m.room.name", "m.room.topic", "m.room.redaction"])
STATE = {"m.room.member", "m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility",
         "m.room.guest_access", "m.room.encryption", "m.room.name", "m.room.topic"}


def canonical(v):
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def sample():
    server = rng.choice(SERVERS)
    sender = user(server)
    kind = rng.choice(KINDS)
    state_key = (sender if rng.random() < 0.7 else user(rng.choice(SERVERS))) if kind == "m.room.member" else ("" if kind in STATE else None)
    room_id = "!" + b64(32)
    ts = rng.randint(1_600_000_000_000, 1_900_000_000_000)
    content = content_of(kind, sender, state_key)
    common = {"content": content, "origin_server_ts": ts, "room_id": room_id, "sender": sender, "type": kind}
    if state_key is not None:
        common["state_key"] = state_key
    if kind == "m.room.redaction":
        common["redacts"] = content["redacts"]
    if rng.random() < 0.5:
        pdu = dict(common, auth_events=[event_id() for _ in range(rng.randint(0 if kind == "m.room.create" else 2, 4))],
                   prev_events=[event_id() for _ in range(1 if rng.random() < 0.9 else 2)], depth=rng.randint(1, 100000),
                   hashes={"sha256": std_b64(32)}, signatures={server: {"ed25519:" + b64(6): std_b64(64)}})
        return canonical(pdu)
    client = dict(common, event_id=event_id())
    if rng.random() < 0.3:
        client["unsigned"] = {"transaction_id": b64(rng.randint(6, 16))}
    return canonical(client)


def main():
    samples = [sample() for _ in range(20000)]
    d = zstandard.train_dictionary(DICT_BYTES, samples, dict_id=DICT_ID, level=3)
    assert d.dict_id() == DICT_ID, d.dict_id()
    open(sys.argv[1], "wb").write(d.as_bytes())
    c = zstandard.ZstdCompressor(dict_data=d, write_content_size=False, write_checksum=False)
    raw = sum(map(len, samples))
    packed = sum(len(c.compress(s)) for s in samples)
    print(f"{len(samples)} samples, {raw / len(samples):.0f} -> {packed / len(samples):.0f} bytes each", file=sys.stderr)


if __name__ == "__main__":
    main()
