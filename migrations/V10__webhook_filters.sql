-- A webhook's payload filter (`hookrelay_core::Filter`), as the JSON it was saved as: checked
-- and compiled by hookrelay, never read by the database. NULL: every event of its types.
-- Adding a nullable column without a default rewrites nothing.
ALTER TABLE webhooks ADD COLUMN filter jsonb;
