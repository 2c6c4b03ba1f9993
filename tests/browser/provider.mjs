// A real, certified OpenID provider (npm oidc-provider) for the browser
// test, with its development sign-in pages: any password signs in the
// login given. Users and their groups:
//   alice  → groups ["sre"]      (the test maps sre to editor)
//   victor → groups ["viewers"]  (viewer)
// Usage: node provider.mjs <port> <client_id> <client_secret> <redirect_uri> <post_logout_uri>
import Provider from "oidc-provider";

const [port, clientId, clientSecret, redirectUri, postLogoutUri] = process.argv.slice(2);
const GROUPS = { alice: ["sre"], victor: ["viewers"] };

const provider = new Provider(`http://localhost:${port}`, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    post_logout_redirect_uris: [postLogoutUri],
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.com`, email_verified: true, name: id, groups: GROUPS[id] || [] };
      },
    };
  },
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"], groups: ["groups"] },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  cookies: { keys: ["browser-test-cookie-key-0123456789"] },
});
provider.on("server_error", (_ctx, err) => console.error("server_error", err));
provider.listen(Number(port), () => console.log(`READY http://localhost:${port}`));
