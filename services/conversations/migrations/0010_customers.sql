-- WhatsApp customers known by a business-scoped user id (BSUID), a phone, or
-- both (issue 7). A message is filed under the thread that has its BSUID, else
-- its phone (services/conversations/src/customers.rs); these indexes serve
-- that lookup, beside the unique key on customer_id.
CREATE INDEX conversations_customer_phone
    ON conversations (tenant_id, location_id, channel, customer_phone)
    WHERE customer_phone IS NOT NULL;
CREATE INDEX conversations_customer_user_id
    ON conversations (tenant_id, location_id, channel, customer_user_id)
    WHERE customer_user_id IS NOT NULL;
