-- Engines record their HTTP egress policy (--http-policy, --http-allow, private targets) when
-- they register, so df.http() / df.http_multipart() can apply it when a graph is built, as
-- pg_durable's do with the policy compiled into the extension (df.http() is disabled ... when
-- HTTP is off). NULL: an engine from before this migration (it cannot run on this schema).
ALTER TABLE df_internal.engines
    ADD COLUMN http_policy text,
    ADD COLUMN http_allow text[],
    ADD COLUMN http_allow_private boolean;
