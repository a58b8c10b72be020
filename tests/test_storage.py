"""smg.storage: the one interface on its three backends (memory, a SQLite file, a real PostgreSQL
server the tests start), atomic writes, restarts, and a backend that is down."""
import asyncio
import uuid

import pytest

from smg.config import StorageConfig
from smg.errors import InvalidRequest, NotFound, StorageUnavailable
from smg.storage import Conversation, StoredResponse, open_storage

pytestmark = pytest.mark.no_kernels  # (the twins' pass leaves it out)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def storage_url(request, tmp_path):
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/smg.sqlite3"
    server = request.getfixturevalue("postgres")
    database = "t" + uuid.uuid4().hex[:12]  # a database per test: no state shared between tests

    async def create():
        import asyncpg

        connection = await asyncpg.connect(server.url)
        try:
            await connection.execute(f"CREATE DATABASE {database}")
        finally:
            await connection.close()

    run(create())
    return server.url.rsplit("/", 1)[0] + "/" + database


def response(rid, prev=None, conversation=None, text="hi"):
    return StoredResponse(id=rid, created_at=1, previous_response_id=prev, conversation_id=conversation,
                          body={"id": rid, "output": [{"type": "message", "content": [{"text": text}]}]},
                          input=[{"id": f"in_{rid}", "type": "message", "role": "user", "content": text}])


def item(iid, text="x"):
    return {"id": iid, "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def opened(url):
    storage = open_storage(StorageConfig(url=url))
    await storage.start()
    return storage


def test_responses_and_chains(storage_url):
    async def go():
        s = await opened(storage_url)
        try:
            assert await s.get_response("r1") is None and await s.response_chain("r1") == []
            await s.put_response(response("r1", text="é日本"))
            await s.put_response(response("r2", prev="r1"))
            await s.put_response(response("r3", prev="r2"))
            got = await s.get_response("r1")
            assert got == response("r1", text="é日本")
            assert [r.id for r in await s.response_chain("r3")] == ["r1", "r2", "r3"]
            assert [r.id for r in await s.response_chain("r2")] == ["r1", "r2"]
            replaced = response("r3", prev="r2", text="again")
            await s.put_response(replaced)  # an update (a background run finishing) replaces the body
            assert (await s.get_response("r3")).body == replaced.body
            assert await s.delete_response("r2") and not await s.delete_response("r2")
            assert [r.id for r in await s.response_chain("r3")] == ["r3"]  # the chain stops at a deleted link
        finally:
            await s.close()

    run(go())


def test_conversations_and_items(storage_url):
    async def go():
        s = await opened(storage_url)
        try:
            await s.create_conversation(Conversation(id="c1", created_at=5, metadata={"k": "v"}),
                                        [item("i1"), item("i2")])
            assert (await s.get_conversation("c1")).metadata == {"k": "v"}
            assert (await s.update_conversation("c1", {"k": "w"})).metadata == {"k": "w"}
            assert await s.update_conversation("nope", {}) is None
            assert await s.add_items("c1", [item("i3"), item("i4")])
            assert not await s.add_items("nope", [item("z")])
            page = await s.list_items("c1")
            assert [i["id"] for i in page.items] == ["i1", "i2", "i3", "i4"] and not page.has_more
            page = await s.list_items("c1", limit=2)
            assert [i["id"] for i in page.items] == ["i1", "i2"] and page.has_more
            page = await s.list_items("c1", after="i2", limit=2)
            assert [i["id"] for i in page.items] == ["i3", "i4"] and not page.has_more
            page = await s.list_items("c1", descending=True, after="i3")
            assert [i["id"] for i in page.items] == ["i2", "i1"]
            assert await s.list_items("nope") is None
            assert (await s.get_item("c1", "i3")) == item("i3")
            assert await s.delete_item("c1", "i3") and not await s.delete_item("c1", "i3")
            assert await s.get_item("c1", "i3") is None
            # a response and the items it appends: together
            await s.put_response(response("r1", conversation="c1"), [item("i5"), item("i6")])
            assert [i["id"] for i in (await s.list_items("c1")).items] == ["i1", "i2", "i4", "i5", "i6"]
            assert await s.delete_conversation("c1") and not await s.delete_conversation("c1")
            assert await s.get_conversation("c1") is None and await s.list_items("c1") is None
        finally:
            await s.close()

    run(go())


def test_nothing_half_written(storage_url):
    """A response whose conversation is gone, or whose items clash, stores nothing."""
    async def go():
        s = await opened(storage_url)
        try:
            with pytest.raises(NotFound):
                await s.put_response(response("r1", conversation="gone"), [item("i1")])
            assert await s.get_response("r1") is None
            await s.create_conversation(Conversation(id="c1", created_at=1), [item("i1")])
            with pytest.raises(InvalidRequest):
                await s.put_response(response("r2", conversation="c1"), [item("i2"), item("i1")])
            assert await s.get_response("r2") is None
            assert [i["id"] for i in (await s.list_items("c1")).items] == ["i1"]
            with pytest.raises(InvalidRequest):
                await s.add_items("c1", [item("i3"), item("i3")])
            assert [i["id"] for i in (await s.list_items("c1")).items] == ["i1"]
        finally:
            await s.close()

    run(go())


@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)  # (memory is ephemeral)
def test_survives_a_restart(storage_url):
    async def go():
        s = await opened(storage_url)
        await s.put_response(response("r1"))
        await s.create_conversation(Conversation(id="c1", created_at=1), [item("i1")])
        await s.close()
        s = await opened(storage_url)  # the schema is there: start migrates nothing, loses nothing
        try:
            assert (await s.get_response("r1")) == response("r1")
            assert [i["id"] for i in (await s.list_items("c1")).items] == ["i1"]
        finally:
            await s.close()

    run(go())


def test_sqlite_unreachable(tmp_path):
    async def go():
        s = open_storage(StorageConfig(url=f"sqlite:///{tmp_path}/missing/dir/x.sqlite3"))
        with pytest.raises(StorageUnavailable):
            await s.start()

    run(go())


def test_postgres_down_then_back(postgres):
    """Calls to a server that went down are 503s; when it is back, the same storage works again."""
    async def go():
        s = await opened(postgres.url)
        try:
            await s.put_response(response("down-1"))
            postgres.stop()
            postgres.wait_down()
            with pytest.raises(StorageUnavailable):
                await s.put_response(response("down-2"))
            with pytest.raises(StorageUnavailable):
                await s.get_response("down-1")
            postgres.start()
            assert await s.get_response("down-2") is None  # nothing of the failed write
            assert (await s.get_response("down-1")).id == "down-1"
        finally:
            await s.close()

    run(go())


def test_storage_urls():
    with pytest.raises(InvalidRequest):
        StorageConfig(url="mysql://x")
    assert type(open_storage(StorageConfig())).__name__ == "MemoryStorage"
