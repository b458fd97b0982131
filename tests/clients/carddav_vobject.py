#!/usr/bin/env python3
"""Parse every card of an entradir address book with vobject (an independent vCard 3.0 implementation).

Usage: carddav_vobject.py BOOK_URL USER PASSWORD
Fetches the book as one text/vcard stream (GET on the collection), parses it strictly and prints a JSON
summary: the number of cards, the names, and for cards with photos the decoded photo sizes and JPEG checks.
Exits non-zero when a card does not parse or lacks what RFC 2426 requires (VERSION, FN, N).
"""
import base64
import json
import sys
import urllib.request

import vobject


def main() -> int:
    url, user, password = sys.argv[1:4]
    req = urllib.request.Request(url, headers={"Accept": "text/vcard; version=3.0"})
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req) as resp:
        text = resp.read().decode("utf-8")
    names, photos, tels, uids, problems = [], [], 0, set(), []
    for card in vobject.readComponents(text, validate=True):
        if card.version.value != "3.0":
            problems.append(f"version {card.version.value}")
        names.append(card.fn.value)
        if not hasattr(card, "n"):
            problems.append(f"{card.fn.value}: no N")
        tels += len(card.contents.get("tel", []))
        uids.add(card.uid.value)
        if hasattr(card, "photo"):
            data = card.photo.value
            if not (isinstance(data, bytes) and data[:2] == b"\xff\xd8"):
                problems.append(f"{card.fn.value}: photo is not a decoded JPEG")
            photos.append(len(data))
    print(json.dumps({"cards": len(names), "names": names, "photos": photos, "tels": tels,
                      "unique_uids": len(uids), "problems": problems}, ensure_ascii=False))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
