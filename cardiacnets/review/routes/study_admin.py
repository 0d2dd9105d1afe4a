"""Study administration: the summary page, its JSON and the CSV export, behind the study's admin token.

Readers never get the admin token; their cookies do not open these pages.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from cardiacnets.review.auth import sign, token_fingerprint, tokens_equal
from cardiacnets.review.study_summary import summarize
from cardiacnets.review.web import (
    IsAdmin,
    State,
    StudyDep,
    admin_guard,
    client_of,
    form_text,
    get_study,
    page,
    require_csrf,
    set_session_cookie,
    study_cookie,
    throttle,
)

router = APIRouter(prefix="/study/{name}/admin", dependencies=[Depends(get_study), Depends(require_csrf)])


@router.get("", response_class=HTMLResponse)
def study_admin(request: Request, study: StudyDep, is_admin: IsAdmin):
    if not is_admin:
        return page(request, "study_admin_login.html", study=study.config)
    return page(request, "study_summary.html", study=study.config, summary=summarize(study.store))


@router.post("/login")
async def study_admin_login(request: Request, study: StudyDep, state: State):
    name, form_key = study.config.name, f"study:{study.config.name}:admin"
    throttle(request, state, form_key, "study_admin_login.html", {"study": study.config})
    form = await request.form()
    if not tokens_equal(form_text(form, "token"), study.config.admin_token):
        state.limiter.failed(form_key, client_of(request))
        return page(request, "study_admin_login.html", status=403, study=study.config, error="wrong admin token")
    state.limiter.succeeded(form_key, client_of(request))
    response = RedirectResponse(f"/study/{name}/admin", status_code=303)
    cookie = sign(state.secret, {"study": name, "t": token_fingerprint(study.config.admin_token)})
    set_session_cookie(request, response, study_cookie(study) + "_admin", cookie, path=f"/study/{name}/")
    return response


@router.get("/export.csv", dependencies=[Depends(admin_guard("text"))])
def study_export(study: StudyDep):
    return Response(study.store.export_csv(), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{study.config.name}_readings.csv"'})


@router.get("/summary.json", dependencies=[Depends(admin_guard("json"))])
def study_summary_json(study: StudyDep):
    return JSONResponse(summarize(study.store))
