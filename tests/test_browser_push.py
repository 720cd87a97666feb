"""Web Push in Chromium: the service worker at /sw.js, the Settings switch, a push shown.

What headless Chromium cannot do here: create a real push subscription. In Playwright's
contexts (off the record) pushManager.subscribe fails at once, "AbortError: Registration
failed - permission denied" with the permission granted (Chromium logs that it does not
support the Push API in incognito mode); in a persistent profile it never answers, waiting
for Firebase Cloud Messaging, which needs Google's servers. So the page's subscribe is
replaced by one returning a subscription whose endpoint is the tests' push service, with keys
the test holds: the client posts it as a browser would, and the server's pushes to it are
decrypted (tests/test_push.py checks them in detail). A push is then delivered to the worker
with the DevTools command ServiceWorker.deliverPushMessage, and the notification it shows is
read back; the click handler's work is run in the worker (a notification's click cannot be
made in headless Chromium) and the page opens the conversation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Route, Worker, expect

from tests.browser_helpers import bubble, close_all, launch, new_person, sign_up, token_of
from tests.conftest import RunningServer, ServerFactory
from tests.push_service import BrowserKeys, PushService


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


@pytest.fixture
async def server(make_server: ServerFactory) -> RunningServer:
    """The tests' push service is on loopback."""
    return await make_server(push_private_endpoints=True)


@pytest.fixture
def push_service() -> Iterator[PushService]:
    service = PushService()
    service.start()
    yield service
    service.stop()


def fake_subscribe(endpoint: str, keys: dict[str, str]) -> str:
    """An init script: pushManager.subscribe gives this subscription (see the module doc)."""
    subscription = json.dumps({"endpoint": endpoint, "expirationTime": None, "keys": keys})
    return f"""
    (() => {{
      if (!self.PushManager) return;
      const json = {subscription};
      let current = null;
      const make = () => ({{
        endpoint: json.endpoint,
        options: {{ applicationServerKey: null }},
        toJSON: () => json,
        unsubscribe: async () => {{ current = null; return true; }},
      }});
      PushManager.prototype.subscribe = async function () {{ current = make(); return current; }};
      PushManager.prototype.getSubscription = async function () {{ return current; }};
    }})();
    """


async def worker_of(page: Page) -> Worker:
    for _ in range(100):
        if page.context.service_workers:
            return page.context.service_workers[0]
        await asyncio.sleep(0.1)
    raise AssertionError("no service worker")


async def stored(server: RunningServer) -> list[dict[str, Any]]:
    return await server.store.db["push_subscriptions"].find({}).to_list()


async def test_service_worker_setting_push_and_click(
    browser: Browser, server: RunningServer, push_service: PushService
) -> None:
    keys = BrowserKeys.generate()
    alice = await new_person(browser, server, "alice", sign_up_now=False)
    await alice.context.grant_permissions(["notifications"], origin=server.base_url)
    await alice.context.add_init_script(
        fake_subscribe(push_service.endpoint("alice"), keys.public())
    )
    page = alice.page
    await page.reload()
    await sign_up(page, "alice")

    # /sw.js is registered at the root, with scope /.
    scope = await page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
    assert scope == server.base_url + "/"
    worker = await worker_of(page)

    # Settings: turning push on posts the subscription for this session.
    await page.get_by_role("button", name="Settings").click()
    await page.get_by_label("Push notifications when no tab is open").check()
    await expect(page.locator("#push-status")).to_have_text(
        "Push notifications are on for this browser."
    )
    [sub] = await stored(server)
    assert sub["_id"] == push_service.endpoint("alice")
    assert sub["p256dh"] == keys.public()["p256dh"]

    # Bob writes (the pushes the server makes of it: tests/test_push.py).
    token = await token_of(page)
    alice_id = (await server.client(token).get("/api/me")).body["user"]["id"]
    bob = server.client()
    await bob.register("bob")
    dm = (await bob.post("/api/conversations/dm", {"user_id": alice_id})).body["conversation"]
    await page.keyboard.press("Escape")
    reply = await bob.post(f"/api/conversations/{dm['id']}/messages", {"body": "ping alice"})
    assert reply.status == 201
    payload = {"type": "message.new", "title": "bob", "body": "ping alice"}
    payload["conversation_id"] = dm["id"]

    # Such a payload, delivered to the worker, is shown as a notification tagged per conversation.
    cdp = await page.context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda e: registrations.extend(e["registrations"]),
    )
    await cdp.send("ServiceWorker.enable")
    for _ in range(50):
        if any(not r["isDeleted"] for r in registrations):
            break
        await asyncio.sleep(0.1)
    [registration] = [r for r in registrations if not r["isDeleted"]][-1:]
    shown = """navigator.serviceWorker.ready.then((r) => r.getNotifications()).then((ns) =>
      ns.map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data })))"""
    # DevTools hands the push to the worker, starting it if it stopped; on a loaded machine
    # that took longer than the 5 s waited once (CI). Delivered again after each 5 s without
    # a notification: the tag makes a second one replace the first, so one is shown either way.
    notes: list[dict[str, Any]] = []
    for _ in range(3):
        await cdp.send(
            "ServiceWorker.deliverPushMessage",
            {
                "origin": server.base_url,
                "registrationId": registration["registrationId"],
                "data": json.dumps(payload),
            },
        )
        for _ in range(50):
            notes = await page.evaluate(shown)
            if notes:
                break
            await asyncio.sleep(0.1)
        if notes:
            break
    assert notes == [
        {
            "title": "bob",
            "body": "ping alice",
            "tag": f"conversation-{dm['id']}",
            "data": {"conversation_id": dm["id"]},
        }
    ]

    # The click's work: the tab is told to open the conversation, and does.
    await worker.evaluate(f"openConversation({json.dumps(dm['id'])})")
    await expect(page).to_have_url(f"{server.base_url}/#c={dm['id']}")
    await expect(bubble(page, "ping alice")).to_be_visible()

    # Turning it off deletes the subscription; so does a logout.
    await page.get_by_role("button", name="Settings").click()
    await page.get_by_label("Push notifications when no tab is open").uncheck()
    # Said once the server deleted it (the status was empty while that was under way too).
    await expect(page.locator("#push-status")).to_have_text(
        "Push notifications are off for this browser."
    )
    assert await stored(server) == []
    await page.get_by_label("Push notifications when no tab is open").check()
    await expect(page.locator("#push-status")).to_have_text(
        "Push notifications are on for this browser."
    )
    assert len(await stored(server)) == 1
    await page.keyboard.press("Escape")
    await page.get_by_role("button", name="Log out").click()
    for _ in range(50):
        if not await stored(server):
            break
        await asyncio.sleep(0.1)
    assert await stored(server) == []
    assert alice.errors == []
    await close_all(alice)


async def test_click_opens_a_conversation_the_tab_has_not_loaded(
    browser: Browser, server: RunningServer
) -> None:
    """The push can be about a conversation that began after the tab loaded its list: the click
    still opens it (the tab fetches the list again), it is not dropped as unknown."""
    alice = await new_person(browser, server, "alice")
    page = alice.page
    worker = await worker_of(page)
    token = await token_of(page)
    alice_id = (await server.client(token).get("/api/me")).body["user"]["id"]
    bob = server.client()
    await bob.register("bob")

    # The tab's list is slow to come: the click comes before the list has the new DM.
    async def slow_list(route: Route) -> None:
        await asyncio.sleep(1.5)
        await route.continue_()

    await page.route("**/api/conversations", slow_list)
    dm = (await bob.post("/api/conversations/dm", {"user_id": alice_id})).body["conversation"]

    await worker.evaluate(f"openConversation({json.dumps(dm['id'])})")
    await expect(page).to_have_url(f"{server.base_url}/#c={dm['id']}")
    await expect(page.locator("#chat-title")).to_have_text("bob")
    assert alice.errors == []
    await close_all(alice)
