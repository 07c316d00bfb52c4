// Starts Swagger UI on the API description (served by this service, no third-party script: see the CSP).
window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  // the session cookie goes with "Try it out"; state-changing calls need the CSRF token (see /api/auth/me)
  withCredentials: true,
});
