-- A catalog dump of the `payments` schema, one line per fact, sorted: what a
-- database's extension objects are, independent of how they got there (fresh
-- install or upgrade). tests/tests/upgrade.rs compares two databases with it.
-- Object identities (OIDs), creation order and dropped columns are left out;
-- everything a user can observe is in.
WITH ns AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'payments'),
sorted_acl(acl, sorted) AS (
    SELECT a.acl, coalesce((SELECT string_agg(x::text, ' ' ORDER BY x::text) FROM unnest(a.acl) x), 'default')
    FROM (SELECT DISTINCT relacl AS acl FROM pg_catalog.pg_class
          UNION SELECT DISTINCT proacl FROM pg_catalog.pg_proc
          UNION SELECT DISTINCT nspacl FROM pg_catalog.pg_namespace) a
),
facts(line) AS (
    -- The schema itself.
    SELECT 'schema acl ' || coalesce(sa.sorted, 'default') || ' comment ' || coalesce(obj_description(n.oid, 'pg_namespace'), '-')
    FROM pg_catalog.pg_namespace n LEFT JOIN sorted_acl sa ON sa.acl IS NOT DISTINCT FROM n.nspacl
    WHERE n.nspname = 'payments'
    UNION ALL
    -- Tables, views, indexes, composite types: kind, options, privileges, comment.
    SELECT format('relation %s kind %s options %s acl %s comment %s', c.relname, c.relkind, c.reloptions,
                  coalesce(sa.sorted, 'default'), coalesce(obj_description(c.oid, 'pg_class'), '-'))
    FROM pg_catalog.pg_class c LEFT JOIN sorted_acl sa ON sa.acl IS NOT DISTINCT FROM c.relacl
    WHERE c.relnamespace IN (SELECT oid FROM ns)
    UNION ALL
    -- Columns in order (dropped ones left out), with type, default, nullability, collation and comment.
    SELECT format('column %s.%s #%s %s %s default %s collate %s comment %s', c.relname, a.attname,
                  row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), format_type(a.atttypid, a.atttypmod),
                  CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END,
                  coalesce(pg_get_expr(d.adbin, d.adrelid), '-'), coalesce(co.collname, '-'),
                  coalesce(col_description(c.oid, a.attnum), '-'))
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
    LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100
    WHERE c.relnamespace IN (SELECT oid FROM ns) AND c.relkind IN ('r', 'v', 'c', 'p')
    UNION ALL
    -- Column privileges (what a reader may select of a table), row-level security and its policies.
    SELECT format('column acl %s.%s %s', c.relname, a.attname,
                  (SELECT string_agg(x::text, ' ' ORDER BY x::text) FROM unnest(a.attacl) x))
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
    WHERE c.relnamespace IN (SELECT oid FROM ns) AND a.attacl IS NOT NULL AND NOT a.attisdropped
    UNION ALL
    SELECT format('row security %s %s %s', c.relname, c.relrowsecurity, c.relforcerowsecurity)
    FROM pg_catalog.pg_class c WHERE c.relnamespace IN (SELECT oid FROM ns) AND c.relkind = 'r'
    UNION ALL
    SELECT format('policy %s.%s %s %s to %s using %s', c.relname, p.polname, p.polcmd, p.polpermissive,
                  (SELECT string_agg(r::regrole::text, ',' ORDER BY r::regrole::text) FROM unnest(p.polroles) r),
                  pg_get_expr(p.polqual, p.polrelid))
    FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
    WHERE c.relnamespace IN (SELECT oid FROM ns)
    UNION ALL
    SELECT format('constraint %s.%s %s deferrable %s deferred %s', c.relname, k.conname, pg_get_constraintdef(k.oid),
                  k.condeferrable, k.condeferred)
    FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
    WHERE c.relnamespace IN (SELECT oid FROM ns)
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
    FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
    WHERE c.relnamespace IN (SELECT oid FROM ns)
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid)
    FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace IN (SELECT oid FROM ns) AND NOT t.tgisinternal
    UNION ALL
    SELECT format('view %s %s', c.relname, pg_get_viewdef(c.oid))
    FROM pg_catalog.pg_class c WHERE c.relnamespace IN (SELECT oid FROM ns) AND c.relkind = 'v'
    UNION ALL
    -- Functions: the whole definition (arguments, defaults, body, volatility,
    -- security, settings), privileges and comment.
    SELECT format('function %s acl %s comment %s definition %s', p.oid::regprocedure, coalesce(sa.sorted, 'default'),
                  coalesce(obj_description(p.oid, 'pg_proc'), '-'), pg_get_functiondef(p.oid))
    FROM pg_catalog.pg_proc p LEFT JOIN sorted_acl sa ON sa.acl IS NOT DISTINCT FROM p.proacl
    WHERE p.pronamespace IN (SELECT oid FROM ns)
    UNION ALL
    SELECT format('type %s comment %s', t.typname, coalesce(obj_description(t.oid, 'pg_type'), '-'))
    FROM pg_catalog.pg_type t
    WHERE t.typnamespace IN (SELECT oid FROM ns) AND t.typtype IN ('c', 'e', 'd', 'b') AND t.typname NOT LIKE '\_%'
    UNION ALL
    -- What pg_dump keeps the rows of, and which objects the extension owns.
    SELECT 'config table ' || cfg::regclass::text
    FROM pg_catalog.pg_extension e, unnest(e.extconfig) cfg WHERE e.extname = 'payments'
    UNION ALL
    SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
    FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
    WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'payments'
      -- The pg_test build adds its #[pg_test] functions in schema tests.
      AND pg_describe_object(d.classid, d.objid, d.objsubid) !~ '^(schema tests$|function tests\.)'
)
SELECT line FROM facts ORDER BY line
