-- payments: the people who sign in to the gateway's web dashboard, and their
-- sessions. Passwords are Argon2id hashes made and checked inside the
-- extension (payments-core's password.rs); session tokens are kept as sha256
-- only, as API keys are. The dashboard reads and acts through the same
-- functions and views as every other client; what a role may do is the
-- gateway's check, made against the role stored here.

CREATE OR REPLACE FUNCTION payments._dashboard_email(p_email text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_email text := lower(btrim(p_email));
BEGIN
    IF v_email IS NULL OR v_email !~ '^[^@[:space:]]+@[^@[:space:]]+$' OR length(v_email) > 254 THEN
        RAISE EXCEPTION 'email must look like name@domain (at most 254 characters)' USING ERRCODE = 'PM100';
    END IF;
    RETURN v_email;
END
$$;
COMMENT ON FUNCTION payments._dashboard_email(text) IS
    'Internal: a dashboard user''s email as stored (trimmed, lower case), or PM100.';

CREATE OR REPLACE FUNCTION payments._dashboard_password(p_password text) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_problem text := payments._password_problem(p_password);
BEGIN
    IF p_password IS NULL OR v_problem IS NOT NULL THEN
        RAISE EXCEPTION '%', coalesce(v_problem, 'password is required') USING ERRCODE = 'PM100';
    END IF;
    RETURN payments._password_hash(p_password);
END
$$;
COMMENT ON FUNCTION payments._dashboard_password(text) IS
    'Internal: the Argon2id hash of a password that meets the rules (12 characters to 1024 bytes), or PM100.';

CREATE OR REPLACE FUNCTION payments.create_dashboard_user(email text, role text, password text DEFAULT NULL)
RETURNS TABLE (user_id text, user_email text, user_role text, generated_password text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_email    text := payments._dashboard_email(create_dashboard_user.email);
    v_password text := coalesce(create_dashboard_user.password, payments._new_token('pw'));
    v_id       text := payments._new_id('dbu');
    v_hash     text;
BEGIN
    IF role IS NULL OR NOT payments._is_allowed('dashboard_role', role) THEN
        RAISE EXCEPTION 'role must be viewer or operator' USING ERRCODE = 'PM100';
    END IF;
    v_hash := payments._dashboard_password(v_password);
    INSERT INTO payments.dashboard_users (id, email, role, password_hash)
    VALUES (v_id, v_email, role, v_hash)
    ON CONFLICT ON CONSTRAINT dashboard_users_email_key DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'a dashboard user with email % exists', payments._shown(v_email) USING ERRCODE = 'PM100',
            HINT = 'payments.reset_dashboard_password(email) gives it a new password';
    END IF;
    RETURN QUERY SELECT v_id, v_email, role,
        CASE WHEN create_dashboard_user.password IS NULL THEN v_password END;
END
$$;
COMMENT ON FUNCTION payments.create_dashboard_user(text, text, text) IS
    'Creates a dashboard user: role viewer (reads) or operator (may also refund, capture and cancel). Without a password one is generated and returned, this once; a chosen one (12 characters or more) is not echoed. Only its Argon2id hash is kept. PM100 for a bad email or role, a short password, or an email already taken.';

CREATE OR REPLACE FUNCTION payments.reset_dashboard_password(email text, password text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_password text := coalesce(reset_dashboard_password.password, payments._new_token('pw'));
    v_hash     text := payments._dashboard_password(v_password);
    v_user     text;
BEGIN
    UPDATE payments.dashboard_users u SET password_hash = v_hash, disabled_at = NULL
    WHERE u.email = payments._dashboard_email(reset_dashboard_password.email)
    RETURNING u.id INTO v_user;
    IF v_user IS NULL THEN
        RAISE EXCEPTION 'no dashboard user with email %', payments._shown(email) USING ERRCODE = 'PM204';
    END IF;
    UPDATE payments.dashboard_sessions s SET ended_at = now() WHERE s.user_id = v_user AND s.ended_at IS NULL;
    RETURN CASE WHEN reset_dashboard_password.password IS NULL THEN v_password END;
END
$$;
COMMENT ON FUNCTION payments.reset_dashboard_password(text, text) IS
    'Gives a dashboard user a new password (generated and returned when none is given), enables the user again and ends every session of theirs. PM204 for an unknown email.';

CREATE OR REPLACE FUNCTION payments.disable_dashboard_user(email text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_user text;
BEGIN
    UPDATE payments.dashboard_users u SET disabled_at = now()
    WHERE u.email = payments._dashboard_email(disable_dashboard_user.email) AND u.disabled_at IS NULL
    RETURNING u.id INTO v_user;
    UPDATE payments.dashboard_sessions s SET ended_at = now() WHERE s.user_id = v_user AND s.ended_at IS NULL;
    RETURN v_user IS NOT NULL;
END
$$;
COMMENT ON FUNCTION payments.disable_dashboard_user(text) IS
    'Stops a dashboard user from signing in and ends their sessions at once. false if unknown or already disabled.';

CREATE OR REPLACE FUNCTION payments.dashboard_sign_in(email text, password text, ttl interval DEFAULT '12 hours')
RETURNS TABLE (session_token text, csrf_token text, user_id text, user_email text, user_role text,
               expires_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_user  payments.dashboard_users;
    v_token text;
    v_csrf  text;
BEGIN
    IF ttl IS NULL OR ttl NOT BETWEEN interval '1 minute' AND interval '30 days' THEN
        RAISE EXCEPTION 'ttl is 1 minute to 30 days' USING ERRCODE = 'PM100';
    END IF;
    SELECT * INTO v_user FROM payments.dashboard_users u
    WHERE u.email = lower(btrim(dashboard_sign_in.email)) AND u.disabled_at IS NULL;
    -- An unknown email is checked against a decoy hash: as slow as a wrong password.
    IF NOT payments._password_matches(v_user.password_hash, coalesce(dashboard_sign_in.password, '')) THEN
        RAISE EXCEPTION 'email or password is wrong' USING ERRCODE = 'PM110';
    END IF;
    DELETE FROM payments.dashboard_sessions s WHERE s.user_id = v_user.id AND s.expires_at < now();
    v_token := payments._new_token('dsh');
    v_csrf := payments._new_token('csrf');
    INSERT INTO payments.dashboard_sessions (token_hash, user_id, csrf_token, expires_at)
    VALUES (sha256(convert_to(v_token, 'UTF8')), v_user.id, v_csrf, now() + ttl);
    RETURN QUERY SELECT v_token, v_csrf, v_user.id, v_user.email, v_user.role, now() + ttl;
END
$$;
COMMENT ON FUNCTION payments.dashboard_sign_in(text, text, interval) IS
    'Checks a dashboard user''s email and password and opens a session: its token (the cookie; only its sha256 is kept), the token forms must carry against cross-site requests, the user and role, and when it ends. PM110 when the email or password is wrong or the user is disabled, the same answer for each so it tells nothing.';

CREATE OR REPLACE FUNCTION payments.dashboard_session(session_token text)
RETURNS TABLE (user_id text, user_email text, user_role text, csrf_token text, expires_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT u.id, u.email, u.role, s.csrf_token, s.expires_at
    FROM payments.dashboard_sessions s
    JOIN payments.dashboard_users u ON u.id = s.user_id
    WHERE s.token_hash = sha256(convert_to(dashboard_session.session_token, 'UTF8'))
      AND s.ended_at IS NULL AND s.expires_at > now() AND u.disabled_at IS NULL;
END
$$;
COMMENT ON FUNCTION payments.dashboard_session(text) IS
    'The user, role and form token of a live session (not ended, not expired, user not disabled); no row otherwise.';

CREATE OR REPLACE FUNCTION payments.dashboard_sign_out(session_token text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE payments.dashboard_sessions s SET ended_at = now()
    WHERE s.token_hash = sha256(convert_to(dashboard_sign_out.session_token, 'UTF8')) AND s.ended_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION payments.dashboard_sign_out(text) IS 'Ends a session at once. false if it was unknown or already ended.';
