"""The D-Bus client delivers `Changed` only from the current unique-name owner of
org.lvmsuper.Supervisor1, following NameOwnerChanged sent by the bus itself."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("dbus_next")

from dbus_next import Message, MessageType  # noqa: E402

from lvmsuper.client.dbus import (BUS_NAME, INTERFACE, OBJECT_PATH,  # noqa: E402
                                  AsyncDbusTransport, to_dbus)


def changed(sender: str, name: str) -> Message:
    return Message(message_type=MessageType.SIGNAL, path=OBJECT_PATH, interface=INTERFACE,
                   member="Changed", signature="aa{sv}", sender=sender,
                   body=[[to_dbus({"type": "vg", "name": name})]])


def owner_changed(sender: str, old: str, new: str) -> Message:
    return Message(message_type=MessageType.SIGNAL, path="/org/freedesktop/DBus",
                   interface="org.freedesktop.DBus", member="NameOwnerChanged",
                   signature="sss", sender=sender, body=[BUS_NAME, old, new])


def test_only_the_owner_is_heard_and_followed() -> None:
    got: list[dict[str, Any]] = []
    conn = AsyncDbusTransport("unix:path=/nonexistent", 1, got.append)
    heard = lambda: [n["params"]["objects"][0]["name"] for n in got]  # noqa: E731
    conn._on_message(changed(":1.5", "before-any-owner"))
    conn._on_message(owner_changed("org.freedesktop.DBus", "", ":1.5"))
    conn._on_message(changed(":1.5", "real"))
    conn._on_message(changed(":1.66", "forged"))
    conn._on_message(owner_changed(":1.66", ":1.5", ":1.66"))  # not from the bus: ignored
    conn._on_message(changed(":1.66", "forged-after-fake-owner-change"))
    assert heard() == ["real"]
    conn._on_message(owner_changed("org.freedesktop.DBus", ":1.5", ""))  # daemon stopped
    conn._on_message(changed(":1.5", "from-the-old-owner"))
    conn._on_message(owner_changed("org.freedesktop.DBus", "", ":1.9"))  # restarted
    conn._on_message(changed(":1.5", "from-the-old-owner-again"))
    conn._on_message(changed(":1.9", "from-the-new-owner"))
    assert heard() == ["real", "from-the-new-owner"]
