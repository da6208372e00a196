"""Drives a Caxton A2A agent with the official A2A Python SDK (PyPI `a2a-sdk`, protocol 1.0).

Usage: a2a_client.py ROOT TOKEN OTHER_TOKEN BINDING
  ROOT is the listener's URL (http://127.0.0.1:PORT); the agents `adder` (scripted arithmetic)
  and `slow` (answers after 3 s) must be exposed. BINDING is JSONRPC or HTTP+JSON.
Every check is an assert; the last line printed is `ok` when all held.
"""

import asyncio
import sys
import uuid

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError

ROOT, TOKEN, OTHER, BINDING = sys.argv[1:5]


def message(text, context_id=""):
    return Message(
        message_id=str(uuid.uuid4()),
        role=Role.ROLE_USER,
        parts=[Part(text=text)],
        context_id=context_id,
    )


async def client_for(http, agent, streaming):
    card = await A2ACardResolver(http, f"{ROOT}/a2a/{agent}").get_agent_card()
    config = ClientConfig(
        httpx_client=http, supported_protocol_bindings=[BINDING], streaming=streaming
    )
    return card, ClientFactory(config).create(card)


async def one_task(client, request):
    """The task a non-streaming send answers with."""
    responses = [r async for r in client.send_message(request)]
    assert len(responses) == 1 and responses[0].HasField("task"), responses
    return responses[0].task


async def main():
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        card, client = await client_for(http, "adder", streaming=False)
        # The card: who, what, where, how to authenticate.
        assert card.name == "adder", card
        assert card.description.startswith("Adds and multiplies"), card.description
        assert [s.id for s in card.skills] == ["math"], card.skills
        bindings = sorted(i.protocol_binding for i in card.supported_interfaces)
        assert bindings == ["HTTP+JSON", "JSONRPC"], bindings
        assert all(i.protocol_version == "1.0" for i in card.supported_interfaces)
        assert all(i.url == f"{ROOT}/a2a/adder" for i in card.supported_interfaces)
        scheme = card.security_schemes["bearer"].http_auth_security_scheme
        assert scheme.scheme.lower() == "bearer", card.security_schemes
        assert card.capabilities.streaming

        # Send: a task that completes with the answer as an artifact, in a new context.
        task = await one_task(client, SendMessageRequest(message=message("2 + 3")))
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
        assert task.artifacts[0].parts[0].text == "The result is 5.", task.artifacts
        assert task.context_id.startswith("conv-"), task.context_id
        assert [m.role for m in task.history] == [Role.ROLE_USER, Role.ROLE_AGENT]
        context = task.context_id

        # The same context continues the conversation.
        again = await one_task(client, SendMessageRequest(message=message("4 * 4", context)))
        assert again.context_id == context and again.id != task.id
        assert again.artifacts[0].parts[0].text == "The result is 16.", again

        # Get (with a history limit) and list (by context, paged).
        got = await client.get_task(GetTaskRequest(id=task.id, history_length=1))
        assert got.status.state == TaskState.TASK_STATE_COMPLETED
        assert [m.parts[0].text for m in got.history] == ["The result is 5."], got.history
        listed = await client.list_tasks(ListTasksRequest(context_id=context))
        assert sorted(t.id for t in listed.tasks) == sorted([task.id, again.id]), listed
        assert listed.total_size == 2
        page = await client.list_tasks(ListTasksRequest(context_id=context, page_size=1))
        assert len(page.tasks) == 1 and page.next_page_token == "1", page
        rest = await client.list_tasks(
            ListTasksRequest(context_id=context, page_size=1, page_token=page.next_page_token)
        )
        assert len(rest.tasks) == 1 and rest.next_page_token == "", rest
        assert rest.tasks[0].id != page.tasks[0].id
        done = await client.list_tasks(ListTasksRequest(status=TaskState.TASK_STATE_COMPLETED))
        assert done.total_size >= 2

        # Unknown tasks, and another token's, are not found.
        for bad in ["run-none"]:
            try:
                await client.get_task(GetTaskRequest(id=bad))
                raise AssertionError("an unknown task was found")
            except TaskNotFoundError:
                pass
        other_headers = {"Authorization": f"Bearer {OTHER}"}
        async with httpx.AsyncClient(headers=other_headers, timeout=60) as other_http:
            _, other = await client_for(other_http, "adder", streaming=False)
            try:
                await other.get_task(GetTaskRequest(id=task.id))
                raise AssertionError("another token's task was found")
            except TaskNotFoundError:
                pass

        # Streaming: the task, Caxton's events as working updates, the answer, completed.
        _, streamer = await client_for(http, "adder", streaming=True)
        events = [e async for e in streamer.send_message(SendMessageRequest(message=message("6 * 7")))]
        assert events[0].HasField("task"), events[0]
        assert events[0].task.status.state == TaskState.TASK_STATE_WORKING
        kinds = [e.WhichOneof("payload") for e in events]
        assert kinds[-1] == "status_update" and "artifact_update" in kinds, kinds
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
        caxton = [
            e.status_update.metadata["caxton"]
            for e in events
            if e.HasField("status_update") and "caxton" in e.status_update.metadata
        ]
        assert any("tool_result" in c for c in caxton), caxton
        text = "".join(
            e.artifact_update.artifact.parts[0].text for e in events if e.HasField("artifact_update")
        )
        assert text == "The result is 42.", text
        assert events[-1].status_update.task_id == events[0].task.id

        # Cancel a working task; cancelling it again is refused.
        _, slow = await client_for(http, "slow", streaming=False)
        waiting = SendMessageRequest(
            message=message("take your time"),
            configuration=SendMessageConfiguration(return_immediately=True),
        )
        working = await one_task(slow, waiting)
        assert working.status.state == TaskState.TASK_STATE_WORKING, working
        cancelled = await slow.cancel_task(CancelTaskRequest(id=working.id))
        assert cancelled.status.state == TaskState.TASK_STATE_CANCELED, cancelled
        try:
            await slow.cancel_task(CancelTaskRequest(id=working.id))
            raise AssertionError("an ended task was cancelled")
        except TaskNotCancelableError:
            pass

        # Subscribe to a working task: it streams to its end.
        working = await one_task(slow, waiting)
        _, slow_streamer = await client_for(http, "slow", streaming=True)
        updates = [e async for e in slow_streamer.subscribe(SubscribeToTaskRequest(id=working.id))]
        assert updates[0].HasField("task") and updates[0].task.id == working.id, updates[0]
        assert updates[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED, updates[-1]
        final = await slow.get_task(GetTaskRequest(id=working.id))
        assert final.status.state == TaskState.TASK_STATE_COMPLETED
        assert final.artifacts[0].parts[0].text, final

        await client.close()
        await streamer.close()
        await slow.close()
        await slow_streamer.close()
    print("ok")


asyncio.run(main())
