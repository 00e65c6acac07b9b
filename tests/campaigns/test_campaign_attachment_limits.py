"""Attachments past the route's size limits are refused with 413 naming them, and nothing is saved."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.campaigns import assert_refused, campaign
from tests.support.world import Actor, World

MIB = 1024 * 1024


async def uploaded(session: AsyncSession, actor: Actor, size: int) -> str:
    """A file row as an upload leaves it (its bytes are not read when a campaign is saved)."""
    file_id = uuid.uuid4()
    await session.execute(
        text("INSERT INTO files (id, created_by, brand, path, name, mime, size) "
             "VALUES (:id, :u, :b, :p, 'plan.pdf', 'application/pdf', :n)"),
        {"id": file_id, "u": actor.user, "b": actor.brand, "p": f"{actor.user}/{file_id}.pdf", "n": size},
    )  # fmt: skip
    await session.commit()
    return str(file_id)


async def test_mailbox_campaigns_take_26_mib_in_all_and_the_esp_15(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    credential = await world.google_credential(admin)
    twelve = [await uploaded(session, admin, 12 * MIB) for _ in range(3)]
    made = await admin.post(
        "/emails", campaign(google_credential=credential, attachments=[{"file": f} for f in twelve[:2]])
    )
    assert made.status_code == 200, made.text  # 24 MiB through Gmail
    await assert_refused(
        admin, session, campaign(google_credential=credential, attachments=[{"file": f} for f in twelve]),
        "attachments", status=413,
    )  # fmt: skip
    await assert_refused(admin, session, campaign(attachments=[{"file": f} for f in twelve[:2]]), "attachments",
                         status=413)  # fmt: skip
    sixteen = await uploaded(session, admin, 16 * MIB)
    await assert_refused(admin, session, campaign(attachments=[{"file": sixteen}]), "attachments.0.file", status=413)
