-- A webhook's own limits, applied by its queue's single active consumer: at most
-- `rate_limit` requests in any sliding second, and at most `max_in_flight` at once (instead
-- of the setting `max_in_flight_per_webhook`). NULL: no rate limit, the setting's concurrency.
ALTER TABLE webhooks
    ADD COLUMN rate_limit integer CHECK (rate_limit > 0),
    ADD COLUMN max_in_flight integer CHECK (max_in_flight > 0);
