"""A remote A2A agent built with the official A2A Python SDK (PyPI `a2a-sdk`, protocol 1.0), for
Caxton agents to delegate to.

Usage: a2a_sdk_server.py PORT TOKEN
Serves one agent on 127.0.0.1:PORT (card at /.well-known/agent-card.json, JSON-RPC at /). It
requires `Authorization: Bearer TOKEN` on JSON-RPC requests and answers each task with one
artifact: `sdk echo: <the task's text> [traceparent <the header it got, or none>]`. Prints
`listening` once it serves.
"""

import sys

import uvicorn
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes.agent_card_routes import create_agent_card_routes
from a2a.server.routes.jsonrpc_routes import create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Part,
    TaskState,
    TaskStatus,
    Task,
)
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse

PORT, TOKEN = int(sys.argv[1]), sys.argv[2]
URL = f"http://127.0.0.1:{PORT}/"


class Echo(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        headers = context.call_context.state.get("headers", {})
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        if context.current_task is None:
            await event_queue.enqueue_event(
                Task(
                    id=context.task_id,
                    context_id=context.context_id,
                    status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
                    history=[context.message],
                )
            )
        text = context.get_user_input()
        trace = headers.get("traceparent", "none")
        await updater.add_artifact([Part(text=f"sdk echo: {text} [traceparent {trace}]")], name="answer")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


class Bearer(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        if request.method == "POST" and request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return await call_next(request)


card = AgentCard(
    name="sdk-echo",
    description="Echoes its task (an agent of the official A2A SDK).",
    version="1.0.0",
    supported_interfaces=[AgentInterface(url=URL, protocol_binding="JSONRPC", protocol_version="1.0")],
    capabilities=AgentCapabilities(streaming=False),
    default_input_modes=["text/plain"],
    default_output_modes=["text/plain"],
    skills=[AgentSkill(id="echo", name="echo", description="Echoes", tags=["echo"])],
)
handler = DefaultRequestHandler(agent_executor=Echo(), task_store=InMemoryTaskStore(), agent_card=card)
app = Starlette(routes=create_agent_card_routes(card) + create_jsonrpc_routes(handler, "/"))
app.add_middleware(Bearer)


class Announcing(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)
        print("listening", flush=True)


Announcing(uvicorn.Config(app, host="127.0.0.1", port=PORT, log_level="warning")).run()
