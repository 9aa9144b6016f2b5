"""Event bodies as the vendors publish them, written from the facts of each source.

- Partner Center referral events: the property table and examples of
  isabella232/partner-center-sdk-pr.pt-pt ``develop/partner-center-webhook-events.md``
  @155f7531e3482935fce4e6cd2915a8ccdc9f4536 (referral-created, referral-updated; its
  English source lines), and learn.microsoft.com "Partner Center webhook events"
  (ms.date 10/17/2023: related-referral-created, related-referral-updated). The
  published examples hold the placeholder ``{{ReferralID}}``; a GUID stands in for it.
- The signed post: ``develop/partner-center-webhooks.md`` of the same repository
  @9ff9b2b26704fb1f6418a4c1b5c62880185fd539 (headers ``Authorization: Signature …``,
  ``X-MS-Certificate-Url``, ``X-MS-Signature-Algorithm: rsa-sha256``).
- Dataverse: MicrosoftDocs/powerapps-docs
  ``powerapps-docs/developer/data-platform/use-webhooks.md``
  @0180169dbe9064b4367f6a002128454acccedc4d (the RemoteExecutionContext of an Update
  step; the example's table is contact, here opportunity with its own columns).
- Salesforce: the Change Data Capture developer guide, "Change Event Message
  Structure" (``cdc_message_structure``, API 248.0) and "ChangeEventHeader Fields".
"""

from __future__ import annotations

import json
from typing import Any

REFERRAL_ID = "9f0ea3a2-7a86-4b3f-9d1b-52a0f1f6b4c1"
OPPORTUNITY_ID = "6d81597f-0f9f-e711-8122-000d3aa2331c"
SALESFORCE_ID = "0065g00000Abc12AAA"


def partner_center(event: str, referral_id: str = REFERRAL_ID) -> bytes:
    return json.dumps(
        {
            "EventName": event,
            "ResourceUri": f"https://api.partnercenter.microsoft.com/engagements/v1/referrals/{referral_id}",
            "ResourceName": "referral",
            "AuditUri": None,
            "ResourceChangeUtcDate": "2018-02-17T00:05:39.5485487+00:00",
        }
    ).encode()


TEST_CREATED = json.dumps(
    {
        "EventName": "test-created",
        "ResourceUri": "http://api.partnercenter.microsoft.com/webhooks/v1/registration/validationEvents/c0bfd694-3075-4ec5-9a3c-733d3a890a1f",
        "ResourceName": "test",
        "AuditUri": None,
        "ResourceChangeUtcDate": "2017-11-16T16:19:06.3520276+00:00",
    }
).encode()


def dataverse_update(attributes: dict[str, Any], row_id: str = OPPORTUNITY_ID) -> bytes:
    target = {
        "__type": "Entity:http:\\/\\/schemas.microsoft.com\\/xrm\\/2011\\/Contracts",
        "Attributes": [{"key": k, "value": v} for k, v in attributes.items()],
        "EntityState": None,
        "FormattedValues": [],
        "Id": row_id,
        "KeyAttributes": [],
        "LogicalName": "opportunity",
        "RelatedEntities": [],
        "RowVersion": None,
    }
    return json.dumps(
        {
            "BusinessUnitId": "e2b9dd85-e89e-e711-8122-000d3aa2331c",
            "CorrelationId": "b374239d-4233-41a9-8b17-a86cb4f737b5",
            "Depth": 1,
            "InitiatingUserId": "75c2dd85-e89e-e711-8122-000d3aa2331c",
            "InputParameters": [{"key": "Target", "value": target}],
            "IsExecutingOffline": False,
            "IsInTransaction": False,
            "IsOfflinePlayback": False,
            "IsolationMode": 1,
            "MessageName": "Update",
            "Mode": 1,
            "OperationCreatedOn": "/Date(1506409448000-0700)/",
            "OperationId": "4af10637-4ea2-e711-8122-000d3aa2331c",
            "OrganizationId": "4ef5b371-e89e-e711-8122-000d3aa2331c",
            "OrganizationName": "OrgName",
            "OutputParameters": [],
            "OwningExtension": {
                "Id": "75417616-4ea2-e711-8122-000d3aa2331c",
                "KeyAttributes": [],
                "LogicalName": "sdkmessageprocessingstep",
                "Name": None,
                "RowVersion": None,
            },
            "ParentContext": None,
            "PostEntityImages": [],
            "PreEntityImages": [],
            "PrimaryEntityId": row_id,
            "PrimaryEntityName": "opportunity",
            "RequestId": None,
            "SecondaryEntityName": "none",
            "SharedVariables": [],
            "Stage": 40,
            "UserId": "75c2dd85-e89e-e711-8122-000d3aa2331c",
        }
    ).encode()


def change_event(
    change_type: str = "UPDATE",
    record_ids: list[str] | None = None,
    changed_fields: list[str] | None = None,
    replay_id: int = 6,
    entity: str = "Opportunity",
) -> dict[str, Any]:
    """One message as a CometD client receives it on /data/OpportunityChangeEvent."""
    return {
        "channel": "/data/OpportunityChangeEvent",
        "data": {
            "schema": "IeRuaY6cbI_HsV8uYXVIFg",
            "payload": {
                "ChangeEventHeader": {
                    "entityName": entity,
                    "recordIds": record_ids if record_ids is not None else [SALESFORCE_ID],
                    "changeType": change_type,
                    "changeOrigin": "com/salesforce/api/soap/49.0;client=Astro",
                    "transactionKey": "001b7e18-79ec-5d2e-2e39-79b74c1b3dd2",
                    "sequenceNumber": 1,
                    "commitTimestamp": 1569443783000,
                    "commitNumber": 10650000000,
                    "commitUser": "00556000004VgoQAAS",
                    "changedFields": changed_fields or ["Amount", "LastModifiedDate"],
                },
                "Amount": 1000,
                "LastModifiedDate": "2019-09-25T20:36:23.000Z",
            },
            "event": {"replayId": replay_id},
        },
    }
